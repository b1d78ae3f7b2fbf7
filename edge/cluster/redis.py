"""The Redis a cluster of edge nodes shares (SPEC §8): copy locks and change notices.

One `RedisCoordinator` per node owns two connections to Redis: one for commands (locks,
PUBLISH) and one for SUBSCRIBE, because a subscribed Redis connection accepts nothing else.
Both reconnect by themselves. An outage must never hang a request: every command gives up
after a short timeout, and while a connection is down calls fail at once with
`RedisUnavailable`, which the web layer answers with 503 (SPEC §8). The outage is logged
once when it starts and once when it ends, not once per failed call.

txredisapi binds its timers to the global reactor, so this module does too. The URL
parsing lives in `edge.config.redis_address`, the txredisapi plumbing in `redis_connection`.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import txredisapi
from twisted.application.service import Service
from twisted.internet import defer, error
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from edge.cluster.redis_connection import _Factory, _Subscriber
from edge.config.redis_address import DEFAULT_PORT, RedisAddress, parse_redis_url

__all__ = [
    "DEFAULT_PORT",
    "RedisAddress",
    "RedisCoordinator",
    "RedisLock",
    "RedisUnavailable",
    "parse_redis_url",
]

reactor: Any = _reactor
log = Logger()

# Extend/delete the key only while it still holds our token: a lock that expired and was
# taken by another node must be left alone (the check and the action are one atomic script).
_RENEW = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"
)
_RELEASE = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('del', KEYS[1]) else return 0 end"
)

# What a lost, refused or stalled connection looks like to a caller.
_OUTAGE_ERRORS = (
    txredisapi.ConnectionError,  # includes txredisapi.TimeoutError (reply timeout)
    defer.TimeoutError,
    error.TimeoutError,
    error.ConnectError,
    error.ConnectionLost,
    error.ConnectionDone,
)


class RedisUnavailable(Exception):
    """Redis cannot be reached (down, refusing, or not answering within the timeout).

    A distinct type so callers can tell "try again later" (503) from a bug or a Redis
    error reply, which are raised as they are.
    """


class RedisCoordinator(Service):
    """A node's connections to the cluster's Redis: locks, publish and subscribe.

    Start it and it connects (and keeps reconnecting); stop it and it closes both
    connections and stops renewing its locks without releasing them, so they expire
    `ttl` later exactly as if the node had died.
    """

    name = "redis-coordinator"

    def __init__(
        self, address: RedisAddress, timeout: float = 2.0, reconnect_max_delay: float = 2.0
    ) -> None:
        self.address = address
        self.timeout = timeout
        self._max_delay = reconnect_max_delay
        self._commands: _Factory | None = None
        self._subscriber: _Factory | None = None
        self._sub_conn: Any = None  # connected subscriber, possibly still re-subscribing
        self._sub_ready = False  # every channel subscribed on _sub_conn
        self._channels: dict[str, list[Callable[[str], None]]] = {}
        self._locks: set[RedisLock] = set()
        self._outage = False
        self._stopping = False
        # Until the first connection is made or fails, "not connected" is start-up, not an
        # outage: a call then fails (RedisUnavailable) without a warning.
        self._first_attempt = True

    @property
    def available(self) -> bool:
        """Whether both connections are up and every subscription is active again."""
        return self._command_connection() is not None and self._sub_ready

    def startService(self) -> None:
        super().startService()
        self._stopping = False
        self._commands = self._factory(txredisapi.RedisProtocol, self._commands_ready)
        self._subscriber = self._factory(_Subscriber, self._subscriber_ready, self._message)

    def _factory(
        self,
        protocol: type,
        on_ready: Callable[[Any], None],
        on_message: Callable[[Any, Any], None] | None = None,
    ) -> _Factory:
        factory = _Factory(
            self.address,
            self.timeout,
            self._max_delay,
            protocol,
            on_ready,
            self._failed,
            on_message,
        )
        endpoint = HostnameEndpoint(
            reactor, self.address.host, self.address.port, timeout=self.timeout
        )
        factory.startConnecting(endpoint)
        return factory

    def stopService(self) -> Deferred[None]:
        """Stop renewals and close both connections; fires when they are closed."""
        super().stopService()
        self._stopping = True
        for lock in list(self._locks):
            lock._stop_renewal()
        self._locks.clear()
        factories = [f for f in (self._commands, self._subscriber) if f is not None]
        self._commands = self._subscriber = None
        self._sub_conn = None
        self._sub_ready = False
        closing = defer.gatherResults([f.disconnect() for f in factories], consumeErrors=True)
        return closing.addCallback(lambda _: None)

    # --- outage bookkeeping -------------------------------------------------------------

    def _failed(self, reason: str) -> None:
        """Something could not reach Redis: warn if this starts an outage."""
        if self._stopping:
            return
        self._first_attempt = False
        if self._sub_conn is not None and not self._sub_conn.connected:
            self._sub_conn = None
            self._sub_ready = False
        if not self._outage:
            self._outage = True
            log.warn(
                "Redis at {address} is unreachable ({reason}): cluster locks and change "
                "notices fail until it is back",
                address=str(self.address),
                reason=reason,
            )

    def _maybe_back(self) -> None:
        if self._outage and self.available:
            self._outage = False
            log.info("Redis at {address} is reachable again", address=str(self.address))

    def _verify(self, conn: Any) -> Deferred[None]:
        """PING a new connection before using it: one to a frozen server is accepted by
        its kernel and looks connected, but must not end an outage."""
        d = self._guard(conn, defer.maybeDeferred(conn.execute_command, "PING"))
        return d.addCallback(lambda _: None)

    def _commands_ready(self, conn: Any) -> None:
        def verified(_: object) -> None:
            conn.verified = True
            self._first_attempt = False
            self._maybe_back()

        self._verify(conn).addCallbacks(verified, lambda _: None)

    def _subscriber_ready(self, conn: Any) -> None:
        """A new subscriber connection: PING it, subscribe it to every channel (including
        ones added meanwhile, through `_sub_conn`), then count it as ready."""
        self._sub_conn = conn
        self._sub_ready = False

        def subscribe_all(_: object) -> Deferred[Any]:
            channels = list(self._channels)
            return defer.gatherResults(
                [self._subscribe_on(conn, c) for c in channels], consumeErrors=True
            )

        def subscribed(_: object) -> None:
            if self._sub_conn is conn:
                conn.verified = True
                self._sub_ready = True
                self._maybe_back()

        def failed(_: Failure) -> None:
            # _guard noted the outage and dropped the connection; a fresh one tries again.
            if conn.transport is not None:
                conn.transport.abortConnection()

        self._verify(conn).addCallback(subscribe_all).addCallbacks(subscribed, failed)

    # --- commands -----------------------------------------------------------------------

    def _command_connection(self) -> Any:
        return None if self._commands is None else self._commands.ready_connection()

    def _unavailable(self, reason: str) -> Deferred[Any]:
        if not self._first_attempt:
            self._failed(reason)
        return defer.fail(RedisUnavailable(f"Redis at {self.address} is unavailable: {reason}"))

    def _guard(self, conn: Any, d: Deferred[Any]) -> Deferred[Any]:
        """Time `d` (a command on `conn`) out, and turn outage-shaped errors into
        RedisUnavailable; anything else (a Redis error reply, a bug) passes unchanged.

        A connection that timed out or broke is dropped at once, before the caller hears
        of it: its replies can no longer be trusted to match its commands, and `available`
        must already say False if the caller retries straight away.
        """
        d.addTimeout(self.timeout, reactor)

        def translate(failure: Failure) -> Failure:
            if failure.check(*_OUTAGE_ERRORS) is None:
                return failure
            conn.verified = False
            if conn is self._sub_conn:
                self._sub_conn = None
                self._sub_ready = False
            if conn.transport is not None:
                conn.transport.abortConnection()
            reason = failure.getErrorMessage() or type(failure.value).__name__
            self._failed(reason)
            return Failure(RedisUnavailable(f"Redis at {self.address} is unavailable: {reason}"))

        return d.addErrback(translate)

    def execute(self, *args: str | int) -> Deferred[Any]:
        """Run one Redis command on the command connection, failing fast in an outage."""
        conn = self._command_connection()
        if conn is None:
            return self._unavailable("not connected")
        return self._guard(conn, defer.maybeDeferred(conn.execute_command, *args))

    def acquire_lock(self, name: str, ttl: float) -> Deferred[RedisLock | None]:
        """Take the cluster-wide lock `name` for `ttl` seconds, renewed while held.

        Fires with None when another holder has it. The random token is what lets
        renewal and release touch only this holder's lock, never a later one's. An
        acquire that failed with RedisUnavailable may still have taken the key in Redis:
        nobody renews it, so it expires `ttl` later like a dead node's lock.
        """
        if ttl <= 0:
            raise ValueError(f"lock ttl must be positive, not {ttl!r}")
        token = secrets.token_hex(16)
        sent = reactor.seconds()
        d = self.execute("SET", name, token, "NX", "PX", _ms(ttl))

        def acquired(reply: object) -> RedisLock | None:
            if reply is None:
                return None
            lock = RedisLock(self, name, token, ttl, sent + ttl)
            self._locks.add(lock)
            lock._start_renewal()
            return lock

        return d.addCallback(acquired)

    def publish(self, channel: str, message: str) -> Deferred[None]:
        """Send `message` to every node subscribed to `channel` (none listening is fine)."""
        return self.execute("PUBLISH", channel, message).addCallback(lambda _: None)

    # --- subscriptions ------------------------------------------------------------------

    def subscribe(self, channel: str, callback: Callable[[str], None]) -> Deferred[None]:
        """Call `callback(message)` for every message on `channel`, from now on and after
        every reconnect (the subscription is remade by itself).

        Fires when Redis confirms the subscription. Failing with RedisUnavailable says
        only that it is not active yet: it is kept, and made when Redis is back.
        """
        callbacks = self._channels.setdefault(channel, [])
        callbacks.append(callback)
        if len(callbacks) > 1 and self._sub_ready:
            return defer.succeed(None)
        conn = self._sub_conn
        if conn is None:
            # Nothing was tried: the subscriber connection is still being made (start-up)
            # or remade, and subscribes to every channel when it is; not an outage.
            return defer.fail(RedisUnavailable(f"Redis at {self.address}: not connected yet"))
        return self._subscribe_on(conn, channel)

    def _subscribe_on(self, conn: Any, channel: str) -> Deferred[None]:
        d = self._guard(conn, defer.maybeDeferred(conn.subscribe, channel))
        return d.addCallback(lambda _: None)

    def _message(self, channel: Any, message: Any) -> None:
        if isinstance(channel, bytes):
            channel = channel.decode("utf-8", "replace")
        if isinstance(message, bytes):
            message = message.decode("utf-8", "replace")
        for callback in list(self._channels.get(channel, ())):
            try:
                callback(message)
            except Exception:
                log.failure("Subscriber of Redis channel {channel} failed", channel=channel)


class RedisLock:
    """A held cluster lock: renewed every ttl/3 until released, lost or its node stops.

    `lost` turns True when a renewal finds the key gone or another holder's, or when
    Redis has been unreachable for longer than `ttl` since the last good renewal (the key
    has certainly expired then). A holder doing long work checks it before publishing.
    """

    def __init__(
        self, coordinator: RedisCoordinator, name: str, token: str, ttl: float, expires: float
    ) -> None:
        self.name = name
        self.ttl = ttl
        self.lost = False
        self._coordinator = coordinator
        self._token = token
        self._expires = expires
        self._released = False
        self._renewal = LoopingCall(self._renew)

    def _start_renewal(self) -> None:
        self._renewal.start(self.ttl / 3, now=False).addErrback(self._renewal_broke)

    def _stop_renewal(self) -> None:
        if self._renewal.running:
            self._renewal.stop()

    def _renew(self) -> Deferred[None]:
        sent = reactor.seconds()
        d = self._coordinator.execute("EVAL", _RENEW, 1, self.name, self._token, _ms(self.ttl))

        def renewed(reply: object) -> None:
            if reply == 1:
                self._expires = sent + self.ttl
            else:
                self._lose("its key is gone or held by another node")

        def failed(failure: Failure) -> None:
            failure.trap(RedisUnavailable)
            if reactor.seconds() >= self._expires:
                self._lose("Redis was unreachable for longer than its ttl")

        return d.addCallbacks(renewed, failed)

    def _renewal_broke(self, failure: Failure) -> None:
        log.failure("Renewal of Redis lock {name} failed", failure, name=self.name)
        self._lose("its renewal failed")

    def _lose(self, reason: str) -> None:
        if self.lost or self._released:
            return
        self.lost = True
        self._stop_renewal()
        self._coordinator._locks.discard(self)
        log.warn("Lost Redis lock {name}: {reason}", name=self.name, reason=reason)

    def release(self) -> Deferred[None]:
        """Stop renewing and delete the key if it still holds this holder's token.

        Never fails for an outage: the key then simply expires `ttl` later, and a caller
        releasing in a `finally` has nothing better to do about it.
        """
        if self._released:
            return defer.succeed(None)
        self._released = True
        self._stop_renewal()
        self._coordinator._locks.discard(self)
        d = self._coordinator.execute("EVAL", _RELEASE, 1, self.name, self._token)

        def unreachable(failure: Failure) -> None:
            failure.trap(RedisUnavailable)

        return d.addCallbacks(lambda _: None, unreachable)


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))
