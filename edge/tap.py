"""`twistd cosedge`: command-line options and the assembly of the service tree.

All validation happens in `Options.postOptions`, before the reactor runs: the config, the
ISP tables, every IP-literal origin and the data folder. A problem prints one line and exits
non-zero, so an edge either starts whole or not at all.
"""

from __future__ import annotations

import errno
import os
import pwd
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger, LoggingFile
from twisted.python import usage
from twisted.python.failure import Failure

from edge import __version__
from edge.config import ConfigError, EdgeConfig, check_origin_addresses, load_config

log = Logger()


# How often a process looks for buckets and origin rules changed by another (workers).
STATE_CHECK_INTERVAL = 0.5


class StartupError(Exception):
    """Something found while assembling the edge that must stop start-up with one line."""


def _fail(message: str) -> NoReturn:
    # Once twistd's logging has started, sys.stderr is a LoggingFile: a message written
    # there would come out as a log event; the process's real stderr gets the one line.
    stream = sys.stderr
    if isinstance(stream, LoggingFile) and sys.__stderr__ is not None:
        stream = sys.__stderr__
    stream.write(f"cosedge: {message}\n")
    stream.flush()
    raise SystemExit(1)


class Options(usage.Options):
    synopsis = "[--config PATH.yaml] [--listen ENDPOINT] [--data-dir DIR] [--workers N|auto]"
    longdesc = (
        "Serve object-storage buckets from a data folder; on a miss, answer 302 to the "
        "bucket's origin at once and copy the object into the bucket in the background."
    )
    optParameters = [
        ["config", "c", None, "YAML config file (see examples/cosedge.yaml)."],
        ["listen", "l", None, "Twisted endpoint string to listen on (overrides the file)."],
        ["data-dir", "d", None, "Folder holding one sub-folder per bucket (overrides the file)."],
        ["workers", "w", None, "Processes sharing the listening socket, or 'auto' (one per core)."],
        [
            "inherited-fd",
            None,
            None,
            "Internal: serve on this listening socket (worker processes).",
        ],
    ]

    def opt_version(self) -> None:
        """Display cosedge's version and exit."""
        print(f"cosedge {__version__}")
        raise SystemExit(0)

    def getUsage(self, width: int | None = None) -> str:
        """The help text, without `--inherited-fd`: that is how the main process starts its
        workers, not an option for operators."""
        hidden = [opt for opt in self.longOpt if opt.startswith("inherited-fd")]
        self.longOpt = [opt for opt in self.longOpt if opt not in hidden]
        try:
            return super().getUsage(width)
        finally:
            self.longOpt += hidden

    def postOptions(self) -> None:
        try:
            config = load_config(
                self["config"],
                listen=self["listen"],
                data_dir=self["data-dir"],
                workers=self["workers"],
            )
        except ConfigError as e:
            _fail(e.first_line())
        self.inherited_fd: int | None = None
        if self["inherited-fd"] is not None:
            if not str(self["inherited-fd"]).isdigit():
                _fail("--inherited-fd: must be a file descriptor number")
            self.inherited_fd = int(self["inherited-fd"])
        self.edge_config = config
        self.policy = load_policy(config)
        self._check_data_dir(config)

    def _check_data_dir(self, config: EdgeConfig) -> None:
        """Create and sweep the data folder as the user the edge will run as.

        twistd binds as root and drops to `--uid/--gid` only after this runs; folders made
        here as root would leave every later copy failing with EACCES while misses still
        get their 302s. So the work is done with that user's effective ids, and a folder
        that user cannot write stops start-up naming both.
        """
        from edge.store import ObjectStore

        store = ObjectStore(config.data_dir, config.buckets)
        user = RunAs.from_twistd(getattr(self, "parent", None))
        as_whom = f" as user {user.name}" if user is not None else ""
        try:
            with switched_to(user):
                store.prepare(sweep=self.inherited_fd is None)
                for folder in [store.tmp_dir, *(config.data_dir / b for b in config.buckets)]:
                    if not os.access(folder, os.W_OK | os.X_OK, effective_ids=True):
                        raise PermissionError(errno.EACCES, "Permission denied", str(folder))
        except OSError as e:
            reason = f"cannot prepare {e.filename}{as_whom}: {e.strerror}"
            _fail(str(config.error("data_dir", reason)))
        self.store = store


@dataclass(frozen=True)
class RunAs:
    """The user twistd will drop to after binding (`--uid`, `--gid`)."""

    uid: int
    gid: int
    name: str

    @classmethod
    def from_twistd(cls, parent: Any) -> RunAs | None:
        uid = parent.get("uid") if parent is not None else None
        if uid is None or os.geteuid() != 0 or uid == 0:
            return None
        try:
            entry: Any = pwd.getpwuid(uid)
            name, default_gid = entry.pw_name, entry.pw_gid
        except KeyError:
            name, default_gid = str(uid), uid
        gid = parent.get("gid")
        return cls(uid, default_gid if gid is None else gid, name)


@contextmanager
def switched_to(user: RunAs | None) -> Iterator[None]:
    """Run the block with `user`'s effective ids and groups, then become root again."""
    if user is None:
        yield
        return
    groups = os.getgroups()
    os.setgroups(os.getgrouplist(user.name, user.gid) if user.name != str(user.uid) else [])
    os.setegid(user.gid)
    os.seteuid(user.uid)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)
        os.setgroups(groups)


def load_policy(config: EdgeConfig) -> Any:
    """Load the ISP tables and judge every IP-literal origin; fail start-up on a problem."""
    try:
        return build_policy(config)
    except ConfigError as e:
        _fail(e.first_line())


def build_policy(config: EdgeConfig) -> Any:
    """The origin address policy for `config`: its ISP tables and extra CIDRs, with every
    IP-literal origin judged; raises `ConfigError` (all problems found) instead of exiting,
    so `cosedge check-config` and a reload can report and keep going."""
    from edge.isp.index import bundled_tables_dir
    from edge.isp.policy import OriginAddressPolicy
    from edge.isp.table import TableError

    tables = config.isp_ranges if config.isp_ranges is not None else bundled_tables_dir()
    key = "isp_ranges" if config.isp_ranges is not None else "isp_ranges (bundled)"
    if not Path(tables).is_dir():
        raise config.error(key, f"{tables} is not a folder")
    try:
        policy = OriginAddressPolicy(Path(tables), config.extra_origin_cidrs)
    except TableError as e:
        raise config.error(key, f"bad table line: {e}") from None
    except ValueError as e:
        raise config.error("extra_origin_cidrs", str(e)) from None
    except OSError as e:
        raise config.error(key, f"cannot read {e.filename}: {e.strerror}") from None
    check_origin_addresses(config, lambda ip: _verdict(policy, ip))
    return policy


def _verdict(policy: Any, ip: str) -> tuple[bool, str]:
    verdict = policy.check(ip)
    return verdict.accepted, verdict.reason


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

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except CannotListenError as e:
            where = f"{e.interface or '*'}:{e.port}"
            reason = getattr(e.socketError, "strerror", None) or str(e.socketError)
            _fail(f"listen: cannot listen on {where}: {reason}")
        self._waitingForPort.addCallback(self._ready)

    def stopService(self) -> Deferred[None]:
        d: Deferred[None] = super().stopService()
        close = getattr(self.factory, "close_connections", None)
        if close is not None:
            close()
        return d

    def _ready(self, port: Any) -> Any:
        log.info("cosedge ready: listening on {where}", where=describe_address(port.getHost()))
        return port


class TableReloadService(Service):
    """Reloads the ISP tables on SIGHUP without touching connections or copies.

    The tables are read and parsed in a thread (a large table takes seconds, and the
    reader may wait out an update in progress), so the reactor keeps serving meanwhile;
    the new index is swapped in on the reactor thread when it is ready. SIGHUPs that
    arrive during a reload are coalesced into one more reload after it, which is enough
    to pick up whatever changed since the running one started reading. Each outcome is
    one structured event (`outcome`: "reloaded" or "failed").
    """

    name = "isp-table-reload"  # type: ignore[assignment]

    def __init__(self, reactor: Any, policy: Any) -> None:
        self._reactor = reactor
        self._policy = policy
        self._previous: Any = None
        self._running: Deferred[None] | None = None
        self._again = False

    @property
    def reloading(self) -> bool:
        return self._running is not None

    def startService(self) -> None:
        super().startService()
        if hasattr(signal, "SIGHUP"):
            self._previous = signal.signal(signal.SIGHUP, self._on_signal)

    def stopService(self) -> None:
        super().stopService()
        if self._previous is not None:
            signal.signal(signal.SIGHUP, self._previous)
            self._previous = None

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._reactor.callFromThread(self.reload)

    def reload(self) -> Deferred[None]:
        """Start a reload (or, if one is running, ask for one more after it); fires when
        the tables asked for are in force or have been refused."""
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
        tables = str(getattr(self._policy, "tables_dir", "?"))
        d = deferToThreadPool(self._reactor, self._reactor.getThreadPool(), self._read)
        d.addCallbacks(
            self._loaded,
            self._failed,
            callbackArgs=(started, tables),
            errbackArgs=(started, tables),
        )
        d.addBoth(self._next, done)

    def _read(self) -> Any:
        read_index = getattr(self._policy, "read_index", None)
        if read_index is None:  # a policy without the split: reload as one step
            self._policy.reload()
            return None
        return read_index()

    def _loaded(self, index: Any, started: float, tables: str) -> None:
        if index is not None:
            self._policy.use_index(index)
        log.info(
            "ISP tables reloaded on SIGHUP from {tables_dir} in {duration_ms}ms",
            tables_dir=tables,
            duration_ms=round((time.monotonic() - started) * 1000, 1),
            outcome="reloaded",
        )

    def _failed(self, failure: Failure, started: float, tables: str) -> None:
        from edge.isp.table import TableError

        if failure.check(TableError, OSError, ValueError):
            log.error(
                "ISP tables not reloaded: {reason}; the previous tables stay in force",
                tables_dir=tables,
                reason=str(failure.value),
                duration_ms=round((time.monotonic() - started) * 1000, 1),
                outcome="failed",
            )
            return
        log.failure(
            "ISP tables not reloaded; the previous tables stay in force",
            failure,
            tables_dir=tables,
            reason=f"{failure.type.__name__}: {failure.value}",
            outcome="failed",
        )

    def _next(self, result: Any, done: Deferred[None]) -> None:
        if isinstance(result, Failure):
            log.failure("Swapping in the reloaded ISP tables failed", result, outcome="failed")
        if self._again:
            self._start(done)  # coalesced SIGHUPs: one more reload, same waiters
            return
        self._running = None
        done.callback(None)


def build_service(
    config: EdgeConfig,
    policy: Any,
    store: Any,
    reactor: Any,
    *,
    inherited_fd: int | None = None,
    worker_argv: list[str] | None = None,
) -> MultiService:
    """The edge as a service tree: copier, listener, table reloader (and worker processes).

    Takes the reactor instead of importing it so tests can assemble the real tree on a
    `MemoryReactor`. A worker process (`inherited_fd`) adopts the main process's socket;
    the main process with `workers > 1` starts the workers once it listens.
    """
    from edge.buckets import BucketRegistry
    from edge.changestamp import StateWatcher
    from edge.logs import LogLevelService
    from edge.origin import OriginCopier, OriginResolver
    from edge.rules import OriginRules
    from edge.web.api import ManagementAPI
    from edge.web.bodies import BodySpools, SpoolBudget
    from edge.web.resource import EdgeResource
    from edge.web.site import EdgeSite
    from edge.workers import AdoptedListenerService, WorkerSupervisor

    top = MultiService()
    copier = OriginCopier(reactor, store, config.origin_fetch)
    resolver = OriginResolver(
        reactor.nameResolver,
        reactor,
        policy,
        config.origin_fetch.dns_cache_ttl,
        config.origin_fetch.dns_timeout,
    )

    def buckets_changed(added: set[str], removed: set[str]) -> None:
        for name in added:
            store.add_bucket(name)
        for name in removed:
            store.forget_bucket(name)

    registry = BucketRegistry(config.buckets, store.state_dir, buckets_changed)
    rules = OriginRules(store.state_dir, config.buckets)
    try:
        registry.load()
        rules.load()
    except (ValueError, OSError) as e:  # RuleError is a ValueError
        raise StartupError(str(e)) from None
    for name in registry.names():
        log.info(
            "Origin rules of {bucket} come from {source}", bucket=name, source=rules.source(name)
        )
    api = ManagementAPI(config.credentials, registry, store, rules, resolver)
    spools = BodySpools(store.tmp_dir, SpoolBudget(config.limits.spool_bytes))
    resource = EdgeResource(registry, rules, store, resolver, copier, reactor, api, spools)
    site = EdgeSite(resource, reactor=reactor)
    copier.setServiceParent(top)
    listener: Any
    if inherited_fd is not None:
        listener = AdoptedListenerService(reactor, inherited_fd, site)
    else:
        listener = ListenerService(serverFromString(reactor, config.listen), site)
        listener.setName("listener")
    listener.setServiceParent(top)
    LogLevelService(config.log_level).setServiceParent(top)
    TableReloadService(reactor, policy).setServiceParent(top)
    StateWatcher(STATE_CHECK_INTERVAL, [registry.refresh, rules.refresh], reactor).setServiceParent(
        top
    )
    if inherited_fd is None and config.workers > 1 and worker_argv is not None:
        WorkerSupervisor(
            reactor, listener, worker_argv, config.workers - 1, config.origin_fetch.shutdown_grace
        ).setServiceParent(top)
    log.info(
        "cosedge configured from {source}: {count} bucket(s), data in {data_dir}, {workers}",
        source=config.source,
        count=len(config.buckets),
        data_dir=str(store.data_dir),
        workers=f"{config.workers} process(es)" if inherited_fd is None else "worker process",
    )
    return top


def makeService(options: Options) -> IService:
    from twisted.internet import reactor

    from edge.workers import child_argv, die_with_parent

    if options.inherited_fd is not None:
        die_with_parent()
    try:
        return build_service(
            options.edge_config,
            options.policy,
            options.store,
            reactor,
            inherited_fd=options.inherited_fd,
            worker_argv=child_argv(options),
        )
    except StartupError as e:
        _fail(str(e))
        raise  # not reached: _fail exits
