"""Worker processes: `--workers N` runs N processes accepting on one listening socket.

The main process binds the listener as usual, then starts N-1 copies of itself that inherit
that socket (as fd 3) and adopt it with `adoptStreamPort`; the kernel hands each new
connection to whichever process accepts first. An inherited socket rather than
SO_REUSEPORT: it works for every stream endpoint twistd can bind (tcp, tcp6, unix), needs no
second bind that could land on another port when the config says port 0, and a worker can
never be the only one left listening after the main process is gone.

The workers share only the data folder: objects, temp files and per-key copy locks
(`edge.store.folder.keylocks`), which is what keeps one origin fetch per key across
processes. Only the main process sweeps stale temp files at start-up. Workers' output is
relayed through the main process's log as events with their fields (`edge.logs`); a
worker that dies is restarted with a growing delay; stopping the main process stops the
workers (and, should it be killed outright, the kernel sends them SIGTERM).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import socket
import sys
from collections.abc import Sequence
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from edge.logs import WorkerLogRelay
from edge.metrics.folder import process_ended
from edge.process.listener import describe_address

log = Logger()

INHERITED_FD = 3
_FIRST_DELAY = 1.0
_MAX_DELAY = 30.0
_HEALTHY_AFTER = 60.0


def child_argv(options: Any) -> list[str]:
    """The command line of a worker: this edge's own options, plus the inherited socket."""
    argv = [
        sys.executable,
        "-c",
        "from twisted.scripts.twistd import run; run()",
        "-n",
        "--pidfile=",
        # Events go to the main process as JSON records, which re-emits them with their
        # fields to the operator's observer (see edge.logs.WorkerLogRelay).
        "--logger",
        "edge.logs.json_observer",
        "cosedge",
        "--inherited-fd",
        str(INHERITED_FD),
        "--workers",
        "1",
    ]
    if options["config"]:
        argv += ["--config", os.path.abspath(options["config"])]
    argv += ["--data-dir", str(options.edge_config.data_dir.resolve())]
    return argv


def die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when its parent dies (no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    except OSError:
        pass


def share_accepts(port: Any) -> None:
    """Accept one connection per wake-up on a socket other processes accept on too.

    Twisted accepts up to 100+ connections in one go, so the process that wakes first takes
    a whole burst of keep-alive connections and the others idle (seen with wrk: all 64
    connections in one process). One per wake-up lets every process that is free take its
    share: a busy process comes back to its event loop later, so the idle one accepts more.
    """
    if not hasattr(port, "numberAccepts"):
        return
    read = port.doRead

    def do_read() -> Any:
        port.numberAccepts = 1  # doRead grows it after a full burst; keep it at one
        return read()

    port.numberAccepts = 1
    port.doRead = do_read


def socket_family(fd: int) -> int:
    probe = socket.socket(fileno=os.dup(fd))
    try:
        return int(probe.family)
    finally:
        probe.close()


class AdoptedListenerService(Service):
    """A worker's listener: the main process's socket, adopted instead of bound."""

    name = "listener"

    def __init__(self, reactor: Any, fd: int, factory: Any) -> None:
        self._reactor = reactor
        self._fd = fd
        self._factory = factory
        self._port: Any = None
        self._waitingForPort: Deferred[Any] = Deferred()

    def startService(self) -> None:
        super().startService()
        self._port = self._reactor.adoptStreamPort(self._fd, socket_family(self._fd), self._factory)
        os.close(self._fd)  # adoptStreamPort works on its own duplicate
        share_accepts(self._port)

        log.info(
            "cosedge worker {pid} ready: accepting on {where}",
            pid=os.getpid(),
            where=describe_address(self._port.getHost()),
        )
        self._waitingForPort.callback(self._port)

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        close = getattr(self._factory, "close_connections", None)
        if self._port is not None:
            d: Deferred[None] | None = self._port.stopListening()
            if close is not None:
                close()
            return d
        return None


class _WorkerProtocol(ProcessProtocol):
    def __init__(self, supervisor: WorkerSupervisor, number: int) -> None:
        self.supervisor = supervisor
        self.number = number
        self.ended: Deferred[None] = Deferred()
        self.started_at = 0.0
        self.pid: int | None = None  # kept: Twisted clears the process's own once it ends
        self._out = WorkerLogRelay(number, text=_relay_text)
        self._err = WorkerLogRelay(number, text=_relay_text)

    def outReceived(self, data: bytes) -> None:
        self._out.received(data)

    def errReceived(self, data: bytes) -> None:
        self._err.received(data)

    def processEnded(self, reason: Failure) -> None:
        self._out.flush()
        self._err.flush()
        self.ended.callback(None)
        self.supervisor.ended(self, reason)


def _relay_text(number: int, line: str) -> None:
    log.info("worker {number}: {line}", number=number, worker=number, line=line)


class WorkerSupervisor(Service):
    """Starts, watches and stops the worker processes of the main process."""

    name = "workers"

    def __init__(
        self, reactor: Any, listener: Any, argv: Sequence[str], count: int, grace: float
    ) -> None:
        self._reactor = reactor
        self._listener = listener
        self._argv = list(argv)
        self._count = count
        self._grace = grace
        self._fd: int | None = None
        self._workers: dict[int, tuple[_WorkerProtocol, Any]] = {}
        self._delays: dict[int, float] = {}
        self._stopping = False

    def startService(self) -> None:
        super().startService()
        self._listener._waitingForPort.addCallback(self._spawn_all)

    def _spawn_all(self, port: Any) -> Any:
        self._fd = port.fileno()
        share_accepts(port)
        for number in range(1, self._count + 1):
            self._spawn(number)
        return port

    def _spawn(self, number: int) -> None:
        if self._stopping or self._fd is None:
            return
        protocol = _WorkerProtocol(self, number)
        protocol.started_at = self._reactor.seconds()
        process = self._reactor.spawnProcess(
            protocol,
            self._argv[0],
            self._argv,
            env=dict(os.environ),
            childFDs={0: "w", 1: "r", 2: "r", INHERITED_FD: self._fd},
        )
        self._workers[number] = (protocol, process)
        protocol.pid = process.pid
        log.info("Started worker {number} (pid {pid})", number=number, pid=process.pid)

    def hang_up(self) -> None:
        """Pass a SIGHUP on: each worker reloads the config and tables itself."""
        for _, process in list(self._workers.values()):
            try:
                process.signalProcess("HUP")
            except Exception:  # noqa: BLE001 - already gone; it restarts with fresh config
                continue

    def pids(self) -> list[int]:
        return [p.pid for _, p in self._workers.values() if p.pid is not None]

    def ended(self, protocol: _WorkerProtocol, reason: Failure) -> None:
        self._workers.pop(protocol.number, None)
        if protocol.pid is not None:
            process_ended(protocol.pid)
        if self._stopping:
            return
        lived = self._reactor.seconds() - protocol.started_at
        delay = self._delays.get(protocol.number, _FIRST_DELAY)
        if lived > _HEALTHY_AFTER:
            delay = _FIRST_DELAY
        self._delays[protocol.number] = min(delay * 2, _MAX_DELAY)
        log.warn(
            "Worker {number} ended ({reason}); restarting it in {delay:g}s",
            number=protocol.number,
            reason=reason.getErrorMessage(),
            delay=delay,
        )
        self._reactor.callLater(delay, self._spawn, protocol.number)

    def stopService(self) -> Deferred[Any] | None:
        super().stopService()
        self._stopping = True
        waiting = []
        for protocol, process in list(self._workers.values()):
            waiting.append(protocol.ended)
            try:
                process.signalProcess("TERM")
            except Exception:  # noqa: BLE001 - already gone
                continue
            killer = self._reactor.callLater(self._grace + 5, _kill, process)
            protocol.ended.addBoth(_cancel_call, killer)
        if not waiting:
            return None
        return DeferredList(waiting)


def _cancel_call(result: Any, call: Any) -> Any:
    if call.active():
        call.cancel()
    return result


def _kill(process: Any) -> None:
    try:
        process.signalProcess("KILL")
    except Exception:  # noqa: BLE001 - already gone
        pass
