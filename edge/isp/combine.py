"""Combining the sources into one table per ISP, after removing space that is never an origin.

The rule (see `edge.isp.update`) is routed(ISP) ∪ (registered(ISP) ∩ routed(any of the
four)), then the optional routing filter; `combine` applies it and measures every part of it
per ISP (`ISPResult`) for the report. `SpecialSpaceFilter` drops special-purpose space and
default routes from every input first, counting what went and why.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from netaddr import IPNetwork, IPRange, IPSet

from edge.isp import ISP_NAMES
from edge.isp.measure import Sizes
from edge.isp.routed import FilterEffect, RoutedSpace, apply_routing_filter
from edge.isp.sources import ROUTING, SourceData
from edge.isp.special import SPECIAL_RANGES

_ALL = {4: IPSet(["0.0.0.0/0"]), 6: IPSet(["::/0"])}
_OUTSIDE_GLOBAL_V6 = "outside IPv6 global unicast (2000::/3)"


class SpecialSpaceFilter:
    """Removes special-purpose space and default routes, counting what went and why."""

    def __init__(self) -> None:
        self._labelled = [(IPNetwork(cidr), label) for cidr, label in SPECIAL_RANGES]
        special = IPSet(network for network, _ in self._labelled)
        special |= _ALL[6] - IPSet(["2000::/3"])
        self._special = special
        self.dropped: Counter[tuple[str, int]] = Counter()

    def clean(self, ranges: Iterable[IPRange]) -> IPSet:
        kept: list[IPRange] = []
        for r in ranges:
            if r.first == 0 and r.size == _ALL[r.version].size:
                self.dropped["default route", r.version] += r.size
            else:
                kept.append(r)
        addresses = IPSet(kept)
        overlap = addresses & self._special
        if overlap.size:
            for cidr in overlap.iter_cidrs():
                self.dropped[self._label(cidr), cidr.version] += cidr.size
            addresses -= self._special
        return addresses

    def _label(self, cidr: IPNetwork) -> str:
        for network, label in self._labelled:
            if cidr in network:
                return label
        return _OUTSIDE_GLOBAL_V6


@dataclass(frozen=True)
class ISPResult:
    """One ISP's new table and the measurements behind it."""

    isp: str
    table: IPSet
    routed: Sizes
    registered: Sizes
    both: Sizes  # routed by the ISP and registered to it: the sources agree
    added_by_registration: Sizes  # registered to it, routed by another of the four
    unrouted_registration: Sizes  # registered to it, routed by none of the four: left out
    final: Sizes
    routing_filter: FilterEffect | None = None


def combine(
    sources: Sequence[SourceData],
    special_filter: SpecialSpaceFilter,
    routing_filter: RoutedSpace | None = None,
    keep_unannounced: bool = False,
) -> dict[str, ISPResult]:
    routed: dict[str, IPSet] = {isp: IPSet() for isp in ISP_NAMES}
    registered: dict[str, IPSet] = {isp: IPSet() for isp in ISP_NAMES}
    for source in sources:
        target = routed if source.role == ROUTING else registered
        for isp, ranges in source.ranges.items():
            target[isp] |= special_filter.clean(ranges)
    have_routing = any(s.role == ROUTING for s in sources)
    routed_any = IPSet()
    for addresses in routed.values():
        routed_any |= addresses
    results: dict[str, ISPResult] = {}
    for isp in ISP_NAMES:
        reg = registered[isp]
        if have_routing:
            kept = reg & routed_any
            table = routed[isp] | kept
            unrouted = reg - routed_any
        else:
            table, kept, unrouted = reg, reg, IPSet()
        effect = None
        if routing_filter is not None:
            table, effect = apply_routing_filter(table, routing_filter, keep_unannounced)
        results[isp] = ISPResult(
            isp=isp,
            table=table,
            routed=Sizes.of(routed[isp]),
            registered=Sizes.of(reg),
            both=Sizes.of(routed[isp] & reg),
            added_by_registration=Sizes.of(kept - routed[isp]),
            unrouted_registration=Sizes.of(unrouted),
            final=Sizes.of(table),
            routing_filter=effect,
        )
    return results
