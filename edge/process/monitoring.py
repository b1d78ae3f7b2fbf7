"""The metrics' process side: the multiprocess folder, the copy gauges, the ISP table
gauges, and the admin port's listener (main process only).

The folder is prepared by `Options` (as the user the edge runs as; emptied by the main
process only) and chosen by `makeService` before anything makes a metric; in-process tests
never choose one, and keep their metrics in memory.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from twisted.application.internet import TimerService
from twisted.application.service import IService
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger

from edge.config import EdgeConfig
from edge.process.listener import ListenerService

log = Logger()

# How often each process writes its copies queued / in flight to its gauges.
GAUGE_INTERVAL = 1.0

_GENERATION = re.compile(r"^# generation: (\d{8}T\d{6}Z)")


def prepare_metrics_folder(config: EdgeConfig, *, fresh: bool) -> None:
    """Make `<data_dir>/.cosedge/metrics` (emptied when `fresh`); raises `OSError`."""
    from edge.metrics.folder import metrics_folder, prepare_folder
    from edge.process.stores import local_state_dir

    prepare_folder(metrics_folder(local_state_dir(config)), fresh=fresh)


def use_metrics_folder(config: EdgeConfig) -> None:
    """From now on, this process's metrics live in the edge's multiprocess folder."""
    from edge.metrics.folder import metrics_folder, use_folder
    from edge.process.stores import local_state_dir

    use_folder(metrics_folder(local_state_dir(config)))


def copy_gauges(copier: Any) -> IService:
    """Each process's copy load, written every `GAUGE_INTERVAL` (a gauge in multiprocess
    mode cannot be read from a callback at scrape time: the scrape is another process)."""
    from edge.metrics.families import set_copy_load

    def update() -> None:
        jobs = copier.in_flight()
        running = sum(1 for job in jobs if job.started is not None)
        set_copy_load(len(jobs) - running, running)

    service = TimerService(GAUGE_INTERVAL, update)
    service.setName("copy-gauges")
    return service


def note_isp_tables(policy: Any) -> None:
    """The ISP tables now in force (start-up or a reload): their generation and load time."""
    from edge.metrics.families import set_isp_tables

    tables_dir = getattr(policy, "tables_dir", None)
    generation = table_generation_time(Path(tables_dir)) if tables_dir is not None else 0.0
    set_isp_tables(generation, float(getattr(policy, "load_seconds", 0.0)))


def table_generation_time(tables_dir: Path) -> float:
    """The Unix time of the tables' `# generation:` stamp (0 when none is stamped): the
    header alone is read, not the ranges."""
    for path in sorted(tables_dir.glob("*.txt")):
        try:
            with path.open(encoding="utf-8", errors="replace") as lines:
                for _, line in zip(range(40), lines, strict=False):
                    match = _GENERATION.match(line)
                    if match is not None:
                        stamp = datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ")
                        return stamp.replace(tzinfo=UTC).timestamp()
        except OSError:
            continue
    return 0.0


def admin_listener(config: EdgeConfig, public_resource: Any, reactor: Any) -> IService | None:
    """The admin port's listener (None when `admin_listen` is off): its own `EdgeSite`
    over `edge.web.admin.AdminResource`, whose requests are not counted as public traffic."""
    if config.admin_listen is None:
        return None
    from edge.web.admin import AdminResource
    from edge.web.site import EdgeSite

    site = EdgeSite(AdminResource(public_resource), reactor=reactor)
    site.counted = False
    listener = ListenerService(
        serverFromString(reactor, config.admin_listen),
        site,
        key="admin_listen",
        ready="cosedge admin port ready: listening on {where}",
    )
    listener.setName("admin-listener")
    return listener
