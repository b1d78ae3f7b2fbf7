"""SIGHUP reloads of the ISP tables on a real edge: parsed off the reactor, coalesced, and
logged as one structured event each.

The tables here are large on purpose (24,000 CIDRs, about a second or two to parse), so a
reload that ran on the reactor thread would visibly stop the edge from answering.
"""

from __future__ import annotations

import dataclasses
import random
import signal
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from edge.isp import ISP_NAMES
from tests.integration.conftest import request, wait_until

CIDRS_PER_TABLE = 6000


def write_big_tables(folder: Path, seed: int) -> None:
    """Four tables of random /24s (plus the loopback-free test origin's range)."""
    folder.mkdir(exist_ok=True)
    rng = random.Random(seed)
    for isp in ISP_NAMES:
        nets: set[str] = set()
        while len(nets) < CIDRS_PER_TABLE:
            a = rng.randrange(1 << 24)
            nets.add(f"{a >> 16}.{(a >> 8) & 255}.{a & 255}.0/24")
        (folder / f"{isp}.txt").write_text("# synthetic\n" + "\n".join(sorted(nets)) + "\n")


async def start_with_tables(edges, tables: Path):
    config = dataclasses.replace(edges.config(None), isp_ranges=tables)
    edge = await edges.start(config)
    return edge, edge.service.getServiceNamed("reload")


def reload_events(events: list[dict]) -> list[dict]:
    """The reload outcome events (found by their text too, so the test reads the same
    against an edge that logs them without the `outcome` field)."""
    return [
        e
        for e in events
        if e.get("outcome") in ("reloaded", "failed")
        or str(e.get("log_format", "")).startswith(("ISP tables", "Reloaded", "Not reloaded"))
    ]


@pytest_twisted.ensureDeferred
async def test_edge_keeps_answering_while_a_sighup_reload_parses(edges, tmp_path, captured_events):
    """While a SIGHUP reload parses big tables, requests are still answered: at least one
    completes before the reload's event is logged. (Run on the reactor thread, the parse
    would hold every request until it ended, and none would.) How many depends on the
    machine's load: a loaded CI machine once answered 2 where an idle one answers dozens.
    The new index is in force afterwards."""
    tables = tmp_path / "tables"
    write_big_tables(tables, seed=1)
    edge, reloader = await start_with_tables(edges, tables)
    (edge.data_dir / "examplebucket-1250000000" / "f.txt").write_bytes(b"file")
    old_index = edge.policy.index
    write_big_tables(tables, seed=2)
    reloader._on_signal(signal.SIGHUP, None)  # what the signal handler does
    answered_during = 0
    await deferLater(reactor, 0, lambda: None)  # the reactor turn that starts the reload
    while not reload_events(captured_events):
        reply = await request(edge.port, "/f.txt")
        assert reply.status == 200
        if not reload_events(captured_events):
            answered_during += 1
    assert answered_during >= 1, answered_during
    (event,) = reload_events(captured_events)
    assert event.get("outcome") == "reloaded" and event.get("tables_dir") == str(tables)
    assert event["duration_ms"] > 0
    assert edge.policy.index is not old_index


@pytest_twisted.ensureDeferred
async def test_overlapping_sighups_are_coalesced(edges, tmp_path, captured_events):
    """Five SIGHUPs during one reload give exactly one more reload after it, not five."""
    tables = tmp_path / "tables"
    write_big_tables(tables, seed=3)
    edge, reloader = await start_with_tables(edges, tables)
    for _ in range(5):
        reloader._on_signal(signal.SIGHUP, None)
        await deferLater(reactor, 0.01, lambda: None)
    await wait_until(lambda: len(reload_events(captured_events)) >= 2, timeout=30)
    await deferLater(reactor, 5.0, lambda: None)  # longer than one more reload would take
    outcomes = [e.get("outcome") for e in reload_events(captured_events)]
    assert outcomes == ["reloaded", "reloaded"]
    assert not reloader.reloading


@pytest.mark.logs_errors
@pytest_twisted.ensureDeferred
async def test_a_bad_table_is_refused_with_a_structured_event(edges, tmp_path, captured_events):
    """A reload that meets a malformed line keeps the tables in force and logs one event
    with `outcome: failed` and a reason naming the file and line; no traceback."""
    tables = tmp_path / "tables"
    tables.mkdir()
    (tables / "chinatelecom.txt").write_text("# t\n202.96.128.0/24\n")
    edge, reloader = await start_with_tables(edges, tables)
    policy = edge.policy
    before = policy.index
    (tables / "chinatelecom.txt").write_text("# t\n202.96.128.0/24\nnot-a-cidr\n")
    reloader._on_signal(signal.SIGHUP, None)
    await wait_until(lambda: bool(reload_events(captured_events)))
    (event,) = reload_events(captured_events)
    assert event.get("outcome") == "failed"
    assert "chinatelecom.txt:3" in event.get("reason", "")
    assert event.get("log_failure") is None
    assert policy.index is before
    assert policy.check("202.96.128.86").accepted
