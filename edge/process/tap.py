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
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.application.service import IService, MultiService
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.python import usage

from edge import __version__
from edge.config import ConfigError, EdgeConfig, check_origin_addresses, load_config
from edge.process.listener import ListenerService, fail

log = Logger()


# How often a process looks for buckets and origin rules changed by another (workers).
STATE_CHECK_INTERVAL = 0.5


class StartupError(Exception):
    """Something found while assembling the edge that must stop start-up with one line."""


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
            fail(e.first_line())
        self.inherited_fd: int | None = None
        if self["inherited-fd"] is not None:
            if not str(self["inherited-fd"]).isdigit():
                fail("--inherited-fd: must be a file descriptor number")
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
        from edge.process.monitoring import prepare_metrics_folder
        from edge.process.stores import prepare_local
        from edge.store.folder.layout import STATE_FOLDERS
        from edge.store.folder.store import FolderStore as ObjectStore
        from edge.store.keys import UnsafePath

        store = ObjectStore(config.data_dir, config.buckets)
        user = RunAs.from_twistd(getattr(self, "parent", None))
        as_whom = f" as user {user.name}" if user is not None else ""
        try:
            with switched_to(user):
                if config.store.kind == "s3":  # buckets live in the store: local scratch only
                    prepare_local(config)
                    prepare_metrics_folder(config, fresh=self.inherited_fd is None)
                    self.store = None
                    return
                store.prepare(sweep=self.inherited_fd is None)
                state = [store.state_dir / name for name in STATE_FOLDERS]
                for folder in [*state, *(config.data_dir / b for b in config.buckets)]:
                    if not os.access(folder, os.W_OK | os.X_OK, effective_ids=True):
                        raise PermissionError(errno.EACCES, "Permission denied", str(folder))
                prepare_metrics_folder(config, fresh=self.inherited_fd is None)  # .cosedge is safe
        except OSError as e:
            reason = f"cannot prepare {e.filename}{as_whom}: {e.strerror}"
            fail(str(config.error("data_dir", reason)))
        except UnsafePath as e:
            fail(str(config.error("data_dir", str(e))))
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
        fail(e.first_line())


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
    started = time.monotonic()
    try:
        policy = OriginAddressPolicy(Path(tables), config.extra_origin_cidrs)
    except TableError as e:
        raise config.error(key, f"bad table line: {e}") from None
    except ValueError as e:
        raise config.error("extra_origin_cidrs", str(e)) from None
    except OSError as e:
        raise config.error(key, f"cannot read {e.filename}: {e.strerror}") from None
    check_origin_addresses(config, lambda ip: _verdict(policy, ip))
    policy.load_seconds = time.monotonic() - started  # type: ignore[attr-defined] # metrics
    return policy


def _verdict(policy: Any, ip: str) -> tuple[bool, str]:
    verdict = policy.check(ip)
    return verdict.accepted, verdict.reason


# What a SIGHUP can change (the rest needs a restart: see edge.process.reload.RESTART_ONLY).
_RELOADABLE = (
    "buckets",
    "credentials",
    "origin_fetch",
    "limits",
    "log_level",
    "isp_ranges",
    "extra_origin_cidrs",
)


def build_service(
    config: EdgeConfig,
    policy: Any,
    store: Any,
    reactor: Any,
    *,
    inherited_fd: int | None = None,
    worker_argv: list[str] | None = None,
    overrides: Mapping[str, str | None] | None = None,
) -> MultiService:
    """The edge as a service tree: copier, listener, reloader (and worker processes).

    Takes the reactor instead of importing it so tests can assemble the real tree on a
    `MemoryReactor`. A worker process (`inherited_fd`) adopts the main process's socket;
    the main process with `workers > 1` starts the workers once it listens. `overrides`
    are the command line's `--listen`/`--data-dir`/`--workers`, applied again on a reload.
    """
    from edge.api.backfill import origin_locator
    from edge.api.buckets import BucketRegistry
    from edge.api.management import ManagementAPI
    from edge.api.rules import OriginRules
    from edge.logs import LogLevelService
    from edge.origin.backfill import BackfillRunner
    from edge.origin.copier import OriginResolver
    from edge.origin.jobcopies import JobCopier
    from edge.origin.jobs import JobFiles
    from edge.origin.records import FILE_NAME as RECORDS_FILE
    from edge.origin.records import CopyRecords
    from edge.process.monitoring import admin_listener, copy_gauges, note_isp_tables
    from edge.process.reload import Loaded, ReloadService
    from edge.process.stores import bucket_not_made, folder_assembly, s3_assembly
    from edge.process.sweeper import Sweeper
    from edge.process.workers import AdoptedListenerService, WorkerSupervisor
    from edge.store.changestamp import StateWatcher
    from edge.web.bodies import BodySpools, SpoolBudget
    from edge.web.root import EdgeResource
    from edge.web.site import EdgeSite

    top = MultiService()
    if config.store.kind == "s3":
        assembly = s3_assembly(config, reactor, main=inherited_fd is None)
    else:
        assembly = folder_assembly(store)
    store = assembly.store
    for service in assembly.services:  # first: they stop last
        service.setServiceParent(top)
    resolver = OriginResolver(
        reactor.nameResolver,
        reactor,
        policy,
        config.origin_fetch.dns_cache_ttl,
        config.origin_fetch.dns_timeout,
    )
    records = CopyRecords(assembly.state_dir / RECORDS_FILE, reactor)
    copier = JobCopier(reactor, store, config.origin_fetch, resolver=resolver, records=records)
    copy_gauges(copier).setServiceParent(top)
    note_isp_tables(policy)

    def buckets_changed(added: set[str], removed: set[str]) -> None:
        for name in added:
            store.add_bucket(name).addErrback(bucket_not_made, name)
        for name in removed:
            store.forget_bucket(name)

    registry = BucketRegistry(config.buckets, assembly.state_dir, buckets_changed)
    rules = OriginRules(assembly.state_dir, config.buckets)
    registry.shared = rules.shared = assembly.shared
    try:
        registry.load()
        rules.load()
    except (ValueError, OSError) as e:  # RuleError is a ValueError
        raise StartupError(str(e)) from None
    for name in registry.names():
        log.info(
            "Origin rules of {bucket} come from {source}", bucket=name, source=rules.source(name)
        )
    jobs = JobFiles(assembly.state_dir / "jobs")
    api = ManagementAPI(
        config.credentials, registry, store, rules, resolver, copier=copier, jobs=jobs
    )
    spools = BodySpools(store.tmp_dir, SpoolBudget(config.limits.spool_bytes))
    resource = EdgeResource(registry, rules, store, resolver, copier, reactor, api, spools)
    site = EdgeSite(resource, reactor=reactor)
    copier.setServiceParent(top)
    supervisor: Any = None
    access_service = _access_log(config, site, reactor, lambda: supervisor)
    if access_service is not None:  # before the listener: it stops after it, flushing last
        access_service.setServiceParent(top)
    listener: Any
    if inherited_fd is not None:
        listener = AdoptedListenerService(reactor, inherited_fd, site)
    else:
        listener = ListenerService(serverFromString(reactor, config.listen), site)
        listener.setName("listener")
        listener.ready_hooks.append(lambda host: _note_listening(resolver, host))
    _note_listening(resolver, config.listen)
    listener.setServiceParent(top)
    admin = admin_listener(config, resource, reactor) if inherited_fd is None else None
    if admin is not None:  # the main process alone: one admin port per edge
        admin.setServiceParent(top)
    levels = LogLevelService(config.log_level)
    levels.setServiceParent(top)
    refreshers = [registry.refresh, rules.refresh, *assembly.refreshers]
    if assembly.shared is not None:  # first: what it lets through, this tick loads
        refreshers.insert(0, assembly.shared.refresh)
    StateWatcher(STATE_CHECK_INTERVAL, refreshers, reactor).setServiceParent(top)
    supervisor = None
    if inherited_fd is None and config.workers > 1 and worker_argv is not None:
        supervisor = WorkerSupervisor(
            reactor, listener, worker_argv, config.workers - 1, config.origin_fetch.shutdown_grace
        )
        supervisor.setServiceParent(top)
    # An edge assembled from a config with no file behind it (the defaults, or a test's
    # parsed dict) reloads the ISP tables under the config it runs.
    path = config.source if os.path.isfile(config.source) else None
    given = {k: v for k, v in (overrides or {}).items() if v is not None}

    def load(running: EdgeConfig) -> Loaded:
        new = load_config(path, **given) if path is not None else running
        return Loaded(new, build_policy(new))

    def apply(old: EdgeConfig, loaded: Loaded) -> list[str]:
        """Put a validated config in force, every part in this one reactor turn."""
        new = loaded.config
        registry.reconfigure(new.buckets)  # first: the one step that can fail (a folder read)
        policy.adopt(loaded.policy)
        note_isp_tables(loaded.policy)
        rules.reconfigure(new.buckets)
        api.set_credentials(new.credentials)
        copier.reconfigure(new.origin_fetch)
        resolver.reconfigure(new.origin_fetch.dns_cache_ttl, new.origin_fetch.dns_timeout)
        spools.budget.capacity = new.limits.spool_bytes
        levels.set_level(new.log_level)
        return [f"{k} changed" for k in _RELOADABLE if getattr(old, k) != getattr(new, k)]

    reloader = ReloadService(
        reactor, config, load, apply, supervisor.hang_up if supervisor is not None else None
    )
    reloader.setServiceParent(top)
    if inherited_fd is None:  # one sweeper per data folder, one job runner: the main process's
        BackfillRunner(
            reactor, store, copier, jobs, origin_locator(rules, resolver)
        ).setServiceParent(top)
        Sweeper(
            reactor, store, lambda: reloader.config.limits.abort_incomplete_uploads_after
        ).setServiceParent(top)
    log.info(
        "cosedge configured from {source}: {count} bucket(s), data in {data_dir}, {workers}",
        source=config.source,
        count=len(config.buckets),
        data_dir=os.path.abspath(config.data_dir),
        workers=f"{config.workers} process(es)" if inherited_fd is None else "worker process",
    )
    return top


def _note_listening(resolver: Any, where: Any) -> None:
    """Tell the resolver where the edge listens (an endpoint string, or the bound address
    once known), so an origin that resolves there is refused as a loop (SPEC §12)."""
    from edge.config import ListenAddress, listen_address

    if isinstance(where, str):
        address = listen_address(where)
    elif hasattr(where, "port"):
        unspecified = where.host in ("", "0.0.0.0", "::")
        address = ListenAddress(None if unspecified else where.host, where.port)
    else:
        address = None
    if address is not None and address.port:
        resolver.listening_on(address)


def _access_log(config: EdgeConfig, site: Any, reactor: Any, supervisor: Any) -> IService | None:
    """`access_log`: unset keeps the access events in the twistd log; null turns them off;
    a path gets its own buffered file, reopened on SIGUSR1 (passed on to the workers, which
    each append to the same file)."""
    from edge.web.accesslog import AccessLogFile, AccessLogService
    from edge.web.site import OFF

    settings = config.access_log
    if settings is None:
        return None
    if settings.path is None:
        site.access = OFF
        return None
    access = AccessLogFile(settings.path, reactor, settings.format, settings.buffer, settings.flush)
    site.access = access

    def forward() -> None:
        workers = supervisor()
        for pid in workers.pids() if workers is not None else ():
            try:
                os.kill(pid, signal.SIGUSR1)
            except OSError:
                continue  # already gone; a restarted worker opens the file anew

    return AccessLogService(access, reactor, forward)


def makeService(options: Options) -> IService:
    from twisted.internet import reactor

    from edge.process.monitoring import use_metrics_folder
    from edge.process.workers import child_argv, die_with_parent

    if options.inherited_fd is not None:
        die_with_parent()
    use_metrics_folder(options.edge_config)
    try:
        return build_service(
            options.edge_config,
            options.policy,
            options.store,
            reactor,
            inherited_fd=options.inherited_fd,
            worker_argv=child_argv(options),
            overrides={
                "listen": options["listen"],
                "data_dir": options["data-dir"],
                "workers": options["workers"],
            },
        )
    except StartupError as e:
        fail(str(e))
        raise  # not reached: _fail exits
