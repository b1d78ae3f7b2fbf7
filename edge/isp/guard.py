"""The shrink guard: how the new tables differ from the ones in place, and whether to refuse.

A table that would lose more than 10 % of its IPv4 or IPv6 addresses is refused unless
`--force`, because a truncated or damaged download looks exactly like that. The guard
compares like with like: tables in place built without the routing filter are first cut by
this update's filter (`guard_baseline`), so the filter's intended cut does not need `--force`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from netaddr import IPSet

from edge.isp.combine import ISPResult
from edge.isp.measure import Sizes
from edge.isp.routed import FILTER_MARK, RoutedSpace, apply_routing_filter
from edge.isp.table import parse_table, read_table_texts

MAX_SHRINK = 0.10


@dataclass(frozen=True)
class Change:
    isp: str
    old: Sizes
    added: Sizes
    removed: Sizes
    new: Sizes

    def shrink_problems(self, limit: float = MAX_SHRINK) -> list[str]:
        problems = []
        for version, old, new in ((4, self.old.v4, self.new.v4), (6, self.old.v6, self.new.v6)):
            if old and (old - new) / old > limit:
                lost = (old - new) / old
                problems.append(f"{self.isp}: IPv{version} would lose {lost:.1%} of its addresses")
        return problems


def compare(old_tables: Mapping[str, IPSet], results: Mapping[str, ISPResult]) -> list[Change]:
    changes = []
    for isp, result in results.items():
        old = old_tables.get(isp, IPSet())
        changes.append(
            Change(
                isp,
                Sizes.of(old),
                Sizes.of(result.table - old),
                Sizes.of(old - result.table),
                result.final,
            )
        )
    return changes


@dataclass(frozen=True)
class CurrentTables:
    tables: dict[str, IPSet]
    routing_filtered: bool  # built with a routing filter (their header says so)


def read_current(out: Path) -> CurrentTables:
    """The tables in place, to measure the change; a missing folder means first build."""
    if not out.is_dir():
        return CurrentTables({}, False)
    texts = read_table_texts(out)
    tables = {
        isp: IPSet(parse_table(text or "", str(out / f"{isp}.txt"))) for isp, text in texts.items()
    }
    filtered = any(
        line.startswith("# " + FILTER_MARK)
        for text in texts.values()
        for line in (text or "").splitlines()
        if line.startswith("#")
    )
    return CurrentTables(tables, filtered)


def guard_baseline(
    current: CurrentTables, routed: RoutedSpace | None, keep_unannounced: bool
) -> tuple[dict[str, IPSet], bool]:
    """What the shrink guard compares with, and whether it is the cut-down old tables.

    Old tables from before the routing filter are cut by the new filter first: losing the
    unrouted space is this update's purpose and is printed per ISP, but anything beyond it
    (a truncated CSV, a damaged mmdb on a later run) still counts against the 10 %.
    """
    if routed is None or current.routing_filtered or not current.tables:
        return current.tables, False
    baseline = {
        isp: apply_routing_filter(table, routed, keep_unannounced)[0]
        for isp, table in current.tables.items()
    }
    return baseline, True
