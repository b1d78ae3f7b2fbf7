"""The ISP lookup index: address -> the set of ISPs whose tables contain it.

Tables overlap (an address can be in two ISPs' lists), so the index is built as sorted,
disjoint integer ranges, each carrying the frozenset of ISPs that cover it, and a lookup is
one `bisect`. netaddr parses and merges at build time only: its `IPSet` membership test is
about 50x slower, which matters on the miss path of a domain origin.
"""

from __future__ import annotations

import ipaddress
from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

from netaddr import IPAddress, IPNetwork, cidr_merge

import edge
from edge.isp.table import read_tables

_EMPTY: frozenset[str] = frozenset()
AnyAddress: TypeAlias = str | IPAddress | ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class ISPSummary:
    cidrs_v4: int
    addresses_v4: int
    cidrs_v6: int
    addresses_v6: int


class RangeTable:
    """Disjoint [start, end] integer ranges of one IP version, each with the set of labels
    (ISP names, or kinds of special address) whose input ranges cover it."""

    __slots__ = ("starts", "ends", "sets")

    def __init__(self, ranges_by_isp: Mapping[str, Iterable[tuple[int, int]]]) -> None:
        events: dict[int, list[tuple[str, int]]] = {}
        for isp, ranges in ranges_by_isp.items():
            for first, last in ranges:
                events.setdefault(first, []).append((isp, 1))
                events.setdefault(last + 1, []).append((isp, -1))
        interned: dict[frozenset[str], frozenset[str]] = {}
        active: dict[str, int] = {}
        starts: list[int] = []
        ends: list[int] = []
        sets: list[frozenset[str]] = []
        points = sorted(events)
        for i, point in enumerate(points):
            for isp, delta in events[point]:
                active[isp] = active.get(isp, 0) + delta
                if active[isp] == 0:
                    del active[isp]
            if not active or i + 1 == len(points):
                continue
            current = frozenset(active)
            current = interned.setdefault(current, current)
            end = points[i + 1] - 1
            if sets and sets[-1] is current and ends[-1] + 1 == point:
                ends[-1] = end  # same ISPs continue: extend the previous range
            else:
                starts.append(point)
                ends.append(end)
                sets.append(current)
        self.starts = starts
        self.ends = ends
        self.sets = sets

    def lookup(self, value: int) -> frozenset[str]:
        i = bisect_right(self.starts, value) - 1
        if i >= 0 and value <= self.ends[i]:
            return self.sets[i]
        return _EMPTY


class ISPIndex:
    """Immutable: a reload builds a new index and swaps the reference."""

    def __init__(self, tables: Mapping[str, Iterable[IPNetwork]]) -> None:
        by_version: dict[int, dict[str, list[tuple[int, int]]]] = {4: {}, 6: {}}
        summaries: dict[str, ISPSummary] = {}
        for isp, networks in tables.items():
            merged = cidr_merge(list(networks))
            counts = {4: [0, 0], 6: [0, 0]}
            for network in merged:
                by_version[network.version].setdefault(isp, []).append(
                    (network.first, network.last)
                )
                counts[network.version][0] += 1
                counts[network.version][1] += network.size
            summaries[isp] = ISPSummary(counts[4][0], counts[4][1], counts[6][0], counts[6][1])
        self._v4 = RangeTable(by_version[4])
        self._v6 = RangeTable(by_version[6])
        self._summaries = summaries

    @classmethod
    def from_tables(cls, tables: Mapping[str, Iterable[IPNetwork]]) -> ISPIndex:
        return cls(tables)

    @classmethod
    def from_directory(cls, path: Path) -> ISPIndex:
        """Load `<isp>.txt` tables; a malformed line raises `TableError` naming it."""
        return cls(read_tables(Path(path)))

    def lookup_int(self, version: int, value: int) -> frozenset[str]:
        """The fast path for callers that already hold the address as an integer."""
        if version == 4:
            return self._v4.lookup(value)
        if 0xFFFF00000000 <= value <= 0xFFFFFFFFFFFF:  # ::ffff:a.b.c.d is an IPv4 address
            return self._v4.lookup(value & 0xFFFFFFFF)
        return self._v6.lookup(value)

    def lookup(self, address: AnyAddress) -> frozenset[str]:
        """ISPs containing `address` (empty when none); `ValueError` for a non-address."""
        version, value = address_int(address)
        return self.lookup_int(version, value)

    def summary(self) -> dict[str, ISPSummary]:
        return dict(self._summaries)

    @property
    def isps(self) -> tuple[str, ...]:
        return tuple(self._summaries)


def address_int(address: AnyAddress) -> tuple[int, int]:
    """(IP version, integer value) of an address given in any of the usual forms."""
    if isinstance(address, IPAddress):
        return address.version, int(address)
    if isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return address.version, int(address)
    if isinstance(address, str):
        text = address.strip()
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        parsed = ipaddress.ip_address(text.split("%", 1)[0])  # raises ValueError
        return parsed.version, int(parsed)
    raise ValueError(f"not an IP address: {address!r}")


def bundled_tables_dir() -> Path:
    """The tables shipped with cosedge: beside the code in a wheel, at the top of a checkout."""
    package = Path(edge.__file__).resolve().parent
    installed = package / "_data" / "isp_ranges"
    if installed.is_dir():
        return installed
    return package.parent / "data" / "isp_ranges"
